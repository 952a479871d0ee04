"""Streamlit widgets, cached loaders and plotly figure builders: the only package importing streamlit."""
