"""Prompt templates (TOML files), installed as the data package ``icl_audio.prompts``."""
