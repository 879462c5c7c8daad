"""Readers: QA models from local checkpoints or tiny configs (``model``), the registry of model
families (``families``) and LoRA adapters (``lora``); ``tiny`` holds the tiny BERT configurations
and their checks, ``errors`` the ``ModelLoadError`` they all raise."""
