"""The one cached step (compstudy.step): keying, metering, sizing, saving, loading, for every artifact."""
import ast
import math
from pathlib import Path

import pytest
from compstudy import cache, paths, step
from compstudy.models import ModelShape, build_model


def _model(seed=0):
    return build_model(ModelShape("gpt2", 1, 2, 32, 32), vocab_size=64, seed=seed)


class _Tok:  # the least a tokenizer needs to be saved beside a model
    def save_pretrained(self, folder):
        Path(folder, "tokenizer.json").write_text("{}")


def test_build_runs_once_then_loads_with_the_metered_cost_and_size():
    calls = []

    def build(meter):
        calls.append(1)
        with meter.task("phase one"):
            sum(range(10**5))
        with meter.task("phase two"):
            sum(range(10**5))
        return step.Built(_model(), _Tok(), recipe={"facts": {"kind": "test"}})

    loaded = []
    load = lambda key, device: loaded.append(key) or key  # noqa: E731
    params = {"what": "a test step", "n": 1}
    key = step.cached_step("steptest", params, build, load=load)
    assert key == cache.key("steptest", params) and calls == [1]
    recipe = cache.read_recipe(key)
    assert recipe["facts"] == {"kind": "test"} and recipe["params"] == params
    assert recipe["cost"]["seconds"] > 0 and recipe["cost"]["method"] in ("measured", "partly measured", "estimated",
                                                                          "unavailable")
    assert recipe["size"]["n_params"] == sum(p.numel() for p in {id(p): p for p in _model().parameters()}.values())
    assert "model.safetensors" in recipe["files_sha256"]
    assert step.cached_step("steptest", params, build, load=load) == key and calls == [1]  # loaded, not rebuilt
    assert loaded == [key, key]


def test_the_cost_adds_up_the_phases_the_transform_timed():
    class Fake:
        def __init__(self):
            self.n = 0

        def task(self, name):
            import contextlib

            from compstudy.energy import EnergyReading

            @contextlib.contextmanager
            def cm():
                self.n += 1
                yield EnergyReading(seconds=float(self.n), energy_kwh=0.5 * self.n, method="estimated", detail="tdp")
            return cm()

    meter = step.StepMeter(Fake())
    for name in ("a", "b", "c"):
        with meter.task(name):
            pass
    assert meter.cost() == {"seconds": 6.0, "energy_kwh": 3.0, "method": "estimated", "detail": "tdp"}
    meter.readings[1].energy_kwh = float("nan")
    assert math.isnan(meter.cost()["energy_kwh"])  # an unknown part makes the total unknown, never smaller


def test_a_failed_build_leaves_nothing_in_the_cache():
    def build(meter):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        step.cached_step("steptest", {"fails": True}, build)
    assert not cache.exists(cache.key("steptest", {"fails": True}))


def test_a_model_that_cannot_be_saved_is_rederived_from_its_recorded_recipe():
    built = []

    def build(meter):
        built.append(1)
        return step.Built(_model(seed=3), _Tok(), stored=False, recipe={"layers": 2})

    a = step.cached_step("steptest", {"rederived": 1}, build)
    b = step.cached_step("steptest", {"rederived": 1}, build)
    assert len(built) == 2 and a.key == b.key and b.recipe["layers"] == 2
    assert b.recipe["stored"] == "recipe only, re-derived from the parent" and b.recipe["size"]["n_params"] > 0
    assert not (b.path / "model.safetensors").exists()


def test_every_artifact_is_built_or_loaded_through_the_one_step():
    """The only callers of the cache's build and exists are the step itself (issue 14: there were
    five copies of build-or-load: baseline, quantized, pruned, distilled, scratch)."""
    callers = set()
    for path in (paths.repo_root() / "lib" / "compstudy").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "cache"
                    and node.attr in ("build", "exists")):
                callers.add(path.stem)
    assert callers == {"step"}
