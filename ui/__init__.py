"""Streamlit widgets and views shared by the pages (kept out of pages/, where every file is a page)."""
