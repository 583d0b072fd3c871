"""memfit landing page: one question, answered for every method."""
import streamlit as st

from ui import cached, views

st.set_page_config(page_title="memfit", layout="wide")
st.title("memfit — will it fit?")
st.caption("Training memory for LLMs under AdamW, LoRA/QLoRA, 8-bit optimizers and gradient "
           "low-rank projection (GaLore, Q-GaLore, Fira, GradNormLoRP, APOLLO, LoRA-Pro, DCT).")

local = cached.local_gpu()
example = f"Will LLaMA-7B fit on my {local}?" if local else "Will LLaMA-7B fit on my RTX 4090?"
question = st.text_input("Ask about a model, a GPU and (optionally) a method, rank, batch or sequence length",
                         value=example, key="question",
                         help="e.g. 'can I fine-tune mistral 7b with qlora on a t4', "
                              "'llama-2-13b lora rank 64 on an a100 40gb, batch 4, seq 2048'")
if local:
    st.caption(f"This machine's GPU (NVML): **{local}** — used when the question names none.")

try:
    answer = cached.ask(question, local)
except ValueError as err:
    views.show_error(err, "Cannot answer that")
else:
    rows = views.answer(answer)
    views.downloads(rows, "memfit-answer", "answer", payload=answer)

st.divider()
st.markdown("**Explore further**")
cols = st.columns(6)
for col, (page, label) in zip(cols, [("pages/1_Fit_check.py", "Fit check"),
                                     ("pages/2_Compare_methods.py", "Compare methods"),
                                     ("pages/3_Validate.py", "Validate"), ("pages/4_My_GPU.py", "My GPU"),
                                     ("pages/5_Methods.py", "Methods"), ("pages/6_Reports.py", "Reports")]):
    col.page_link(page, label=label)
