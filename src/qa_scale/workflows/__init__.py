"""Whole jobs built from the stages: the offline demo (``demo``) and LoRA vs full (``compare``)."""
