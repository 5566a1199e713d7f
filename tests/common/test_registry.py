"""The one registry every part chosen by name lives in: register, get, refuse an unknown name the same way."""

from __future__ import annotations

import sys
import uuid

import pytest

from paser.common.registry import Registry, UnknownNameError, check_name


def test_a_registered_item_is_found_by_name_and_listed_sorted():
    widgets: Registry[int] = Registry("widget")
    widgets.register("gamma", 3)
    widgets.register("alpha", 1)
    assert widgets.get("gamma") == 3
    assert widgets.names() == ["alpha", "gamma"] == list(widgets)
    assert widgets.items() == [("alpha", 1), ("gamma", 3)] and widgets.values() == [1, 3]
    assert "alpha" in widgets and "beta" not in widgets and len(widgets) == 2


def test_register_is_also_a_decorator_returning_what_it_decorates():
    widgets: Registry[type] = Registry("widget")

    @widgets.register("plain")
    class Plain:
        pass

    assert widgets.get("plain") is Plain


def test_an_unknown_name_lists_the_known_ones_and_the_closest():
    widgets: Registry[int] = Registry("widget")
    for index, name in enumerate(["kmeans", "leiden", "spectral"]):
        widgets.register(name, index)
    with pytest.raises(UnknownNameError) as refused:
        widgets.get("kmean")
    assert str(refused.value) == "unknown widget 'kmean'; known: kmeans, leiden, spectral; did you mean kmeans?"
    assert refused.value.name == "kmean" and refused.value.known == ["kmeans", "leiden", "spectral"]


def test_an_unknown_name_with_nothing_close_has_no_suggestion_and_is_a_value_error():
    widgets: Registry[int] = Registry("widget")
    widgets.register("leiden", 0)
    with pytest.raises(ValueError, match=r"^unknown widget 'dbscan'; known: leiden$"):
        widgets.get("dbscan")
    with pytest.raises(ValueError, match=r"^unknown widget 'dbscan'; known: leiden$"):
        widgets.check("dbscan")
    assert widgets.check("leiden") == "leiden"


def test_a_name_that_is_not_a_string_is_refused_as_unknown():
    widgets: Registry[int] = Registry("widget")
    widgets.register("leiden", 0)
    assert ["leiden"] not in widgets
    with pytest.raises(UnknownNameError, match=r"^unknown widget \['leiden'\]; known: leiden; did you mean leiden\?$"):
        widgets.get(["leiden"])


def test_an_empty_registry_says_none_is_known():
    with pytest.raises(UnknownNameError, match="known: none"):
        Registry("widget").get("any")


def test_a_fixed_set_of_choices_is_refused_the_same_way():
    check_name("manifold", "umap", ("diffusion", "umap"))
    with pytest.raises(
        UnknownNameError, match=r"^unknown manifold 'umpa'; known: diffusion, umap; did you mean umap\?$"
    ):
        check_name("manifold", "umpa", ("diffusion", "umap"))


def test_a_name_registered_twice_is_refused_unless_replaced():
    widgets: Registry[int] = Registry("widget")
    widgets.register("alpha", 1)
    with pytest.raises(ValueError, match="widget 'alpha' is already registered"):
        widgets.register("alpha", 2)
    widgets.register("alpha", 2, replace=True)
    assert widgets.get("alpha") == 2


def test_restore_undoes_what_was_registered_after_the_snapshot():
    widgets: Registry[int] = Registry("widget")
    widgets.register("alpha", 1)
    before = widgets.snapshot()
    widgets.register("beta", 2)
    widgets.register("alpha", 3, replace=True)
    widgets.restore(before)
    assert widgets.items() == [("alpha", 1)]


@pytest.fixture
def lazy_widgets(tmp_path, monkeypatch):
    """A registry whose built-ins live in a module not imported yet: `decorated` registers itself when the module
    is imported, `plain` is the module's attribute PLAIN."""
    home, implementation = f"widget_home_{uuid.uuid4().hex}", f"widget_impl_{uuid.uuid4().hex}"
    (tmp_path / f"{home}.py").write_text(
        "from paser.common.registry import Registry\n"
        f"WIDGETS = Registry('widget', builtins={{'decorated': '{implementation}', "
        f"'plain': '{implementation}:PLAIN'}})\n",
        encoding="utf-8",
    )
    (tmp_path / f"{implementation}.py").write_text(
        f"from {home} import WIDGETS\n\n@WIDGETS.register('decorated')\ndef decorated():\n    return 1\n\nPLAIN = 2\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield __import__(home).WIDGETS, implementation
    for name in (home, implementation):
        sys.modules.pop(name, None)


def test_built_ins_are_listed_without_importing_their_module(lazy_widgets):
    widgets, implementation = lazy_widgets
    assert widgets.names() == ["decorated", "plain"] and "plain" in widgets
    with pytest.raises(UnknownNameError, match="known: decorated, plain"):
        widgets.get("other")
    widgets.check("decorated")
    assert implementation not in sys.modules


def test_a_built_in_is_imported_on_get(lazy_widgets):
    widgets, implementation = lazy_widgets
    assert widgets.get("plain") == 2
    assert implementation in sys.modules
    assert widgets.get("decorated")() == 1


def test_a_plugin_cannot_shadow_a_built_in_not_loaded_yet(lazy_widgets):
    widgets, _ = lazy_widgets
    with pytest.raises(ValueError, match="widget 'decorated' is already registered"):
        widgets.register("decorated", lambda: 0)
    with pytest.raises(ValueError, match="widget 'plain' is already registered"):
        widgets.register("plain", 0)


def test_restore_keeps_built_ins_loaded_after_the_snapshot(lazy_widgets):
    widgets, _ = lazy_widgets
    before = widgets.snapshot()
    widgets.register("extra", 3)
    widgets.get("decorated")
    widgets.register("plain", 4, replace=True)
    widgets.restore(before)
    assert widgets.get("decorated")() == 1 and widgets.get("plain") == 2 and "extra" not in widgets


def test_a_built_in_module_that_does_not_register_its_name_is_a_bug_not_a_refusal(tmp_path, monkeypatch):
    module = f"widget_empty_{uuid.uuid4().hex}"
    (tmp_path / f"{module}.py").write_text("", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    widgets: Registry[int] = Registry("widget", builtins={"ghost": module})
    with pytest.raises(RuntimeError, match=f"{module} did not register widget 'ghost'"):
        widgets.get("ghost")
    sys.modules.pop(module, None)


def test_importing_the_registry_imports_nothing_heavy():
    import subprocess

    code = "import sys, paser.common.registry; print(sorted({'torch', 'numpy', 'pandas'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
