"""Fit check's "From a recipe" upload under AppTest: the recipe's spec is what gets sized, every
field shows its source, and a bad recipe is an inline message."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from planner.fit import fit_report
from planner.format import human_bytes
from planner.recipe import read_recipe

ROOT = Path(__file__).resolve().parents[1]
PAGE = str(next((ROOT / "pages").glob("*_Fit_check.py")))
RECIPES = ROOT / "tests" / "planner" / "recipes"


def _upload(name: str, data: bytes) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    at.selectbox(key="fit_gpu").set_value("a100-80gb")
    at.run()
    at.file_uploader(key="fit_recipe").upload(name, data, "application/x-yaml")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _table(at: AppTest, *columns: str) -> list[dict]:
    for df in at.dataframe:
        frame = df.value
        if all(c in frame.columns for c in columns):
            return frame.to_dict("records")
    raise AssertionError(f"no table with {columns}")


def test_recipe_upload_sizes_the_recipes_spec():
    path = RECIPES / "torchtune_lora.yaml"
    at = _upload(path.name, path.read_bytes())
    spec = read_recipe(path, gpu="a100-80gb").spec
    report = fit_report(spec)
    verdict = (at.success if report.fits else at.error)[0].value
    assert human_bytes(report.peak_bytes) in verdict
    comps = {r["component"]: int(r["bytes"]) for r in _table(at, "component", "bytes")}
    assert comps == report.breakdown.components.as_dict()
    fields = {r["field"]: r for r in _table(at, "field", "value", "from")}
    assert fields["rank"]["value"] == "16" and fields["rank"]["from"] == "model.lora_rank: 16"
    assert fields["adapter_dtype"]["from"].startswith("torchtune preset")


def test_recipe_lists_unknown_and_ignored_keys():
    path = RECIPES / "axolotl_qlora.yaml"
    at = _upload(path.name, path.read_bytes())
    text = " ".join(m.value for m in at.markdown)
    assert "my_unrecognised_switch" in text and "trust_remote_code" in text and "torch_compile" in text


def test_bad_recipe_is_an_inline_message():
    at = _upload("bad.yaml", b"foo: 1\nbar: 2\n")
    assert "cannot tell which framework" in at.error[0].value


def test_recipe_model_outside_the_catalog_uses_the_sidebar_model():
    path = RECIPES / "trl_qlora.yaml"
    at = _upload(path.name, path.read_bytes())
    recipe = read_recipe(path)
    if recipe.model_problem:   # until the catalog resolves this mirror
        assert "sizing the sidebar's model" in at.warning[0].value
