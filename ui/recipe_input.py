"""Fit check's "From a recipe": upload a torchtune/axolotl/LLaMA-Factory/HF recipe and size the
spec it implies (`planner.recipe.read_recipe`), showing where every field came from."""
from __future__ import annotations

import streamlit as st

from planner.recipe import Recipe, read_recipe
from planner.spec import TrainingSpec

from . import views

__all__ = ["recipe_spec", "recipe_table"]


def recipe_table(recipe: Recipe) -> list[dict]:
    """One row per spec field: its value and the recipe key (or preset citation) it came from."""
    return [{"field": k, "value": "-" if v is None else str(v), "from": recipe.sources.get(k, "memfit default")}
            for k, v in recipe.spec.as_dict().items()]


def _show(recipe: Recipe) -> None:
    st.caption(f"{recipe.framework} recipe (told by {recipe.detected_by})")
    st.dataframe(recipe_table(recipe), hide_index=True, key="recipe_fields")
    for title, items in (("Not understood", recipe.unknown_keys), ("Ignored", recipe.ignored),
                         ("Not modelled", recipe.not_modelled), ("Notes", recipe.notes)):
        if items:
            st.markdown(f"**{title}:** " + "; ".join(f"`{i}`" if title == "Not understood" else i for i in items))


def recipe_spec(spec: TrainingSpec | None, key: str) -> TrainingSpec | None:
    """The uploaded recipe's spec on the sidebar's GPU, or `spec` unchanged when none is uploaded.

    A recipe whose model is not in the catalog is sized with the sidebar's model (said so); a bad
    recipe is an inline message and nothing is sized.
    """
    with st.expander("From a recipe", expanded=False):
        upload = st.file_uploader("torchtune / axolotl / LLaMA-Factory YAML, or TrainingArguments / SFTConfig JSON",
                                  type=["yaml", "yml", "json"], key=f"{key}_recipe")
        if upload is None:
            return spec
        try:
            recipe = read_recipe(upload.name, text=upload.getvalue().decode("utf-8"),
                                 gpu=spec.gpu if spec else None)
        except (ValueError, UnicodeDecodeError) as err:
            views.show_error(err, "Cannot read this recipe")
            st.stop()
        _show(recipe)
    if recipe.model_problem:
        if spec is None:
            views.show_error(ValueError(recipe.model_problem), "Cannot size this recipe")
            st.stop()
        st.warning(f"{recipe.model_problem.split('; pass --config')[0]}: sizing the sidebar's model "
                   f"{spec.model} instead (or upload its config.json there).")
        return recipe.spec.replace(model=spec.model)
    return recipe.spec
