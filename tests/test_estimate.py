"""The sensitivity estimate finds the layer that matters, plans ranks within budget, and training uses the plan."""

import json

import pytest

from sidestep.errors import ConfigError
from sidestep.models.tiny import TinyModel
from sidestep.training import estimation
from sidestep.training.sensitivity import ModuleScore, plan_ranks
from sidestep.ui.progress import BatchProgress


def estimate(cfg, run_dir):
    """The estimate as `python -m sidestep.estimate` makes it (without the live bar)."""
    return estimation.estimate(cfg, run_dir, BatchProgress(cfg.estimate.batches, plain=True))


def silence_all_layers_but(dit, keep: int):
    """Zero the value and output projections of every other layer: their attention adds nothing, so none of
    their projections can get a gradient. The answer is known: only layer `keep` matters."""
    for index, layer in enumerate(dit.transformer.layers):
        if index != keep:
            for attention in (layer.self_attn, layer.cross_attn):
                attention.to_v.weight.data.zero_()
                attention.to_out[0].weight.data.zero_()
    return dit


def test_the_layer_the_data_depends_on_ranks_highest_and_gets_the_budget(make_cfg, tmp_path, monkeypatch):
    real_build = TinyModel.dit
    monkeypatch.setattr(TinyModel, "dit", lambda *a, **k: silence_all_layers_but(real_build(*a, **k), keep=1))
    cfg = make_cfg("model.arch.num_hidden_layers=3", "estimate.batches=4")
    result = estimate(cfg, tmp_path)
    report = json.loads(result.path.read_text())
    modules = report["modules"]
    assert len(modules) == 3 * 8
    ranked = list(modules)  # written best first
    assert {name.split(".")[1] for name in ranked[:8]} == {"1"}
    assert all(modules[n]["score"] == 0 and modules[n]["rank"] == 0 for n in ranked[8:])
    assert sorted(report["left_out"]) == sorted(ranked[8:])
    assert modules[ranked[0]]["normalized"] == 1.0
    used = sum(m["rank"] * (m["in_features"] + m["out_features"]) for m in modules.values())
    assert used <= report["budget_params"]
    assert (tmp_path / "estimate.png").read_bytes()[:4] == b"\x89PNG"
    assert result.shares("layer")[0][:2] == ("1", 1.0)  # the table printed first: layer 1 holds the whole score


def scores(*fishers, features=(64, 64)):
    return {f"layers.{i}.self_attn.to_q": ModuleScore(*features, fisher=f) for i, f in enumerate(fishers)}


def test_plan_respects_the_budget_and_follows_the_scores():
    s = scores(8.0, 4.0, 2.0, 1.0, 0.0)
    for budget in (128 * 10, 128 * 40, 128 * 200, 128 * 10_000):
        plan = plan_ranks(s, budget, [4, 8, 16, 32, 64, 128])
        assert sum(r * 128 for r in plan.values()) <= budget
        ranks = [plan[f"layers.{i}.self_attn.to_q"] for i in range(5)]
        assert ranks == sorted(ranks, reverse=True), ranks
    assert plan_ranks(s, 128 * 3, [4, 8]) == {n: 0 for n in s}  # too small for even one rank-4 module
    assert max(plan_ranks(s, 128 * 10_000, [4, 8, 16]).values()) == 16


def test_training_with_a_rank_map_gets_exactly_the_planned_ranks(make_cfg, tmp_path):
    from peft.tuners.lora import LoraLayer

    from sidestep.adapters.attach import adapter_config, add_adapter, trainable_parameters
    from sidestep.models.source import model_source

    path = estimate(make_cfg("estimate.batches=2"), tmp_path / "est").path
    planned = {n: m["rank"] for n, m in json.loads(path.read_text())["modules"].items()}
    cfg = make_cfg(f"adapter.rank_map={path}", "adapter.rank=16", "adapter.alpha=32")
    dit = model_source(cfg.model).dit()
    add_adapter(dit.transformer, adapter_config(cfg), seed=0)
    got = {name: m.r["default"] for name, m in dit.transformer.named_modules() if isinstance(m, LoraLayer)}
    assert got == {n: r for n, r in planned.items() if r}
    assert all(m.scaling["default"] == 2.0 for m in dit.transformer.modules() if isinstance(m, LoraLayer))
    trainable = sum(p.numel() for p in dit.transformer.parameters() if p.requires_grad)
    assert trainable == trainable_parameters(cfg)


def test_stale_or_foreign_estimate_files_are_refused_before_the_model_loads(make_cfg, tmp_path, monkeypatch):
    from sidestep.train import train_adapter

    path = estimate(make_cfg("estimate.batches=1"), tmp_path / "est").path
    monkeypatch.setattr(TinyModel, "dit", lambda *a, **k: pytest.fail("the model was built"))
    with pytest.raises(ConfigError, match=r"was estimated for another model \(num_hidden_layers 2 there, 3 here\)"):
        train_adapter(make_cfg(f"adapter.rank_map={path}", "model.arch.num_hidden_layers=3"), tmp_path / "run")
    (tmp_path / "other.json").write_text('{"samples": []}')
    with pytest.raises(ConfigError, match="is not an estimate.json"):
        train_adapter(make_cfg(f"adapter.rank_map={tmp_path / 'other.json'}"), tmp_path / "run")
    with pytest.raises(ConfigError, match="adapter.rank_map: .* is not a file"):
        make_cfg(f"adapter.rank_map={tmp_path / 'missing.json'}")


def test_no_planned_rank_exceeds_its_modules_width():
    """Issue 27: on the tiny model (64 wide) the estimate planned rank 128, and training refused the plan it had
    just written ("rank 128 for 64 -> 64 features"). Each module's ranks stop at its width."""
    plan = plan_ranks(scores(8.0, 1.0, features=(64, 48)), 10**9, [4, 16, 32, 64, 128])
    assert set(plan.values()) == {32}, plan
