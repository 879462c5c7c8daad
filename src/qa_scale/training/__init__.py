"""Stage 2: the DeepSpeed engine. ``recipe`` (what to train) + ``ds_config`` (how to distribute)
→ ``tasks`` + ``loop`` (setup → fit → finish) with ``optimizer``, ``checkpoint``, ``monitor`` and
``flops`` → ``export`` (a Hugging Face model directory); ``backbone`` is the masked-LM task."""
