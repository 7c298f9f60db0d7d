"""hiralign.registry: one name -> object registry behind degradations, tasks, backbones, generators, loaders."""
from __future__ import annotations

import pytest

from hiralign import degrade, guides, restorers, tasks
from hiralign.data import DatasetError, load, loaders
from hiralign.errors import UserError
from hiralign.registry import Registry, UnknownNameError


def test_register_get_and_names_keep_registration_order():
    reg = Registry("widget")

    @reg.register("b")
    def make_b():
        return "b"

    assert reg.register("a", 1) == 1
    assert reg.get("b") is make_b and reg.get("a") == 1
    assert reg.names() == ["b", "a"] and list(reg) == ["b", "a"] and len(reg) == 2
    assert "a" in reg and "c" not in reg and [] not in reg


def test_unknown_name_lists_the_known_ones():
    reg = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    with pytest.raises(UnknownNameError, match=r"^unknown widget 'gamma'; known: alpha, beta$") as err:
        reg.get("gamma")
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)
    with pytest.raises(UnknownNameError, match=r"^file\.x: unknown widget 'gamma'"):
        reg.get("gamma", where="file.x")


def test_duplicate_registration_is_an_error():
    reg = Registry("widget")
    reg.register("alpha", 1)
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        reg.register("alpha", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(lambda: None)
    assert reg.get("alpha") == 1
    assert reg.unregister("alpha") == 1 and "alpha" not in reg


def test_custom_error_class():
    reg = Registry("dataset kind", error=DatasetError)
    with pytest.raises(DatasetError, match="unknown dataset kind 'x'; known: \\(none\\)"):
        reg.get("x")


@pytest.mark.parametrize("lookup, message", [
    (lambda: degrade.describe("snow"), "unknown degradation 'snow'; known: gaussian, "),
    (lambda: tasks.get_task("denoise-everything"), "unknown task 'denoise-everything'; known: denoise-gaussian, "),
    (lambda: restorers.backbone("nope"), "unknown backbone 'nope'; known: spectral-cnn, "),
    (lambda: guides.generator_function("paint"), "unknown guide generator 'paint'; known: jitter, local-ddpm, recompose, unclip"),
])
def test_every_registry_of_the_library_reports_unknown_names_alike(lookup, message):
    with pytest.raises(ValueError) as err:
        lookup()
    assert isinstance(err.value, UserError) and str(err.value).startswith(message)


def test_the_library_registries_are_registries(tmp_path):
    for reg in (degrade._REGISTRY, tasks.TASKS, restorers._REGISTRY, guides.GENERATORS, loaders._LOADERS):
        assert isinstance(reg, Registry)
    assert loaders._LOADERS.names() == list(loaders.DATASETS)
    assert tasks.TASKS.names()[0] == "denoise-gaussian" and tasks.TASKS["sr-x4"].scale == 4
    with pytest.raises(DatasetError, match="unknown dataset kind 'bogus'; known: cave, icvl"):
        load(tmp_path / "x.mat", kind="bogus")
