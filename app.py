"""memfit landing page: will this training run fit on this GPU?"""
import streamlit as st

from ui.fit_view import fit_summary
from ui.inputs import gpu_select, method_select, model_select

st.set_page_config(page_title="memfit", layout="wide")
st.title("memfit — will it fit?")
st.caption("Training memory for LLMs under AdamW, LoRA/QLoRA, 8-bit optimizers and gradient "
           "low-rank projection (GaLore, Q-GaLore, Fira, GradNormLoRP, APOLLO, LoRA-Pro, DCT).")

cols = st.columns(3)
with cols[0]:
    model = model_select()
with cols[1]:
    method = method_select()
with cols[2]:
    gpu = gpu_select()
fit_summary(model=model, method=method, gpu=gpu)
