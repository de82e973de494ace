"""Interoperation with the ecosystem: ``inference_data`` converts draws to ArviZ's ``InferenceData``."""
