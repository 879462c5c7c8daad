"""Asking trained readers questions: ``qa-scale answer`` (command line) and ``qa-scale serve`` (HTTP).

``readers`` loads models, adapters or an ensemble recipe once; ``answering`` turns paragraphs and
questions into answers through the same windows, logits, ensembler arithmetic and decoder as
``predict`` / ``ensemble``; ``batcher`` gathers concurrent requests into shared forward passes;
``app`` is the FastAPI service and its page; ``ask`` the command line's modes.
"""
